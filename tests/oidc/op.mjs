// A real OpenID Provider for the tests: `oidc-provider` (a certified OP) on loopback, with
// the clients and users the test passes as JSON in argv[2]:
//   { "port": 1234, "clients": [{ "client_id", "client_secret", "redirect_uris": [...],
//       "post_logout_redirect_uris": [...] }],
//     "users": { "alice": { "email", "email_verified", "given_name", "groups": [...] } } }
// Its development login takes any user name (the account id) and any password; the
// consent form follows. It prints "ready" once it listens. Test use only.
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import Provider from 'oidc-provider';

const config = JSON.parse(process.argv[2]);
const issuer = `http://127.0.0.1:${config.port}`;

// A signing key of its own (the package's development key is the same in every process):
// two providers in one test must not be able to sign for each other.
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: randomUUID(), use: 'sig', alg: 'RS256' };

const provider = new Provider(issuer, {
  jwks: { keys: [signingKey] },
  clients: config.clients.map((c) => ({
    client_id: c.client_id,
    client_secret: c.client_secret,
    redirect_uris: c.redirect_uris,
    post_logout_redirect_uris: c.post_logout_redirect_uris || [],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  })),
  // Every authorization request must carry a PKCE challenge (S256).
  pkce: { required: () => true },
  features: { devInteractions: { enabled: true } },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['given_name', 'family_name', 'groups'],
  },
  // The claims of the requested scopes go into the ID token itself.
  conformIdTokenClaims: false,
  cookies: { keys: ['portcullis-tests-only'] },
  async findAccount(ctx, id) {
    const user = (config.users && config.users[id]) || {};
    return {
      accountId: id,
      async claims() {
        return { sub: id, ...user };
      },
    };
  },
});
// The dev interactions warn on every start; the tests read only "ready".
provider.on('server_error', (ctx, err) => console.error('server_error', err));

provider.listen(config.port, '127.0.0.1', () => {
  console.log('ready');
});
