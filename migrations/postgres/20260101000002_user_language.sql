-- The language a user registered in (a code such as "ru"); mails go out in it.
-- '' for accounts from before it was recorded: their mails follow the request.
ALTER TABLE users ADD COLUMN language TEXT NOT NULL DEFAULT '';
