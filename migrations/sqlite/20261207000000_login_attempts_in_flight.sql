-- Guesses at an account's password or code (or at an unknown address) that have been
-- claimed and not yet found right or wrong. The lockout caps failed_login_attempts plus
-- these, and only wrong ones count towards a lock, so right passwords arriving together
-- never lock each other out.
-- in_flight_until: when the newest claim lapses; past it, the claims count as wrong.
ALTER TABLE users ADD COLUMN login_attempts_in_flight INTEGER NOT NULL DEFAULT 0
    CHECK (login_attempts_in_flight >= 0);
ALTER TABLE users ADD COLUMN in_flight_until TEXT;
ALTER TABLE unknown_login_attempts ADD COLUMN login_attempts_in_flight INTEGER NOT NULL DEFAULT 0
    CHECK (login_attempts_in_flight >= 0);
ALTER TABLE unknown_login_attempts ADD COLUMN in_flight_until TEXT;
