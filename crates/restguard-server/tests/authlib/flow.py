"""Python authlib as a third independent client of restguard's OAuth2 / OIDC provider.

Usage: flow.py BASE CLIENT_ID CLIENT_SECRET REDIRECT USERNAME PASSWORD CC_ID CC_SECRET
Prints "ok" on success; any failure raises.
"""
import html
import re
import sys
from urllib.parse import urljoin

import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.jose import JsonWebKey, jwt
from authlib.common.security import generate_token

base, client_id, secret, redirect, username, password, cc_id, cc_secret = sys.argv[1:9]
meta = requests.get(f"{base}/o/.well-known/openid-configuration", timeout=10).json()
assert meta["issuer"] == f"{base}/o", meta
assert requests.get(f"{base}/.well-known/oauth-authorization-server", timeout=10).json()["issuer"] == meta["issuer"]

# Authorization code + PKCE (S256) + OIDC nonce, the forms submitted with a cookie session.
client = OAuth2Session(client_id, secret, scope="openid profile email read", redirect_uri=redirect,
                       code_challenge_method="S256", token_endpoint_auth_method="client_secret_basic")
verifier = generate_token(64)
nonce = generate_token(20)
url, state = client.create_authorization_url(meta["authorization_endpoint"], code_verifier=verifier, nonce=nonce)
browser = requests.Session()

def hidden(page):
    return {html.unescape(n): html.unescape(v) for n, v in
            re.findall(r'<input type="hidden" name="([^"]*)" value="([^"]*)"', page)}

r = browser.get(url, allow_redirects=False, timeout=10)
assert r.status_code == 302, r.status_code
login_url = urljoin(base, r.headers["location"])
page = browser.get(login_url, timeout=10).text
form = hidden(page)
form.update(username=username, password=password)
r = browser.post(f"{base}/api-auth/login/", data=form, allow_redirects=False, timeout=10)
assert r.status_code == 302, (r.status_code, r.text[:200])
consent = browser.get(urljoin(base, r.headers["location"]), timeout=10)
assert consent.status_code == 200, consent.status_code
form = hidden(consent.text)
form["allow"] = "Authorize"
r = browser.post(f"{base}/o/authorize/", data=form, allow_redirects=False, timeout=10)
assert r.status_code == 302, r.status_code
callback = r.headers["location"]
assert callback.startswith(redirect), callback

token = client.fetch_token(meta["token_endpoint"], authorization_response=callback, code_verifier=verifier)
assert token["token_type"] == "Bearer" and token["refresh_token"].startswith("rgrt_"), token

jwks = JsonWebKey.import_key_set(requests.get(meta["jwks_uri"], timeout=10).json())
claims = jwt.decode(token["id_token"], jwks, claims_options={
    "iss": {"essential": True, "value": meta["issuer"]},
    "aud": {"essential": True, "value": client_id},
    "nonce": {"essential": True, "value": nonce},
})
claims.validate()
assert claims["auth_time"] <= claims["iat"], claims

info = client.get(meta["userinfo_endpoint"]).json()
assert info["preferred_username"] == username and info["sub"] == claims["sub"], info

refreshed = client.refresh_token(meta["token_endpoint"], refresh_token=token["refresh_token"])
assert refreshed["access_token"] != token["access_token"]
# The rotated refresh token is dead; presenting it revokes the family.
replay = requests.post(meta["token_endpoint"], auth=(client_id, secret), timeout=10,
                       data={"grant_type": "refresh_token", "refresh_token": token["refresh_token"]})
assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant", replay.text

# Client credentials, introspection, revocation (client_secret_post this time).
svc = OAuth2Session(cc_id, cc_secret, token_endpoint_auth_method="client_secret_post", scope="read")
cc = svc.fetch_token(meta["token_endpoint"], grant_type="client_credentials")
assert "refresh_token" not in cc and cc["scope"] == "read", cc
intro = requests.post(meta["introspection_endpoint"], auth=(cc_id, cc_secret),
                      data={"token": cc["access_token"]}, timeout=10).json()
assert intro["active"] is True and intro["client_id"] == cc_id, intro
svc.revoke_token(meta["revocation_endpoint"], token=cc["access_token"], token_type_hint="access_token")
intro = requests.post(meta["introspection_endpoint"], auth=(cc_id, cc_secret),
                      data={"token": cc["access_token"]}, timeout=10).json()
assert intro == {"active": False}, intro
print("ok")
