"""JWTAuthMiddleware: sets scope["user"] from a simplejwt access token taken
from `?token=` or, when the query has none, `Authorization: Bearer`
(docs/protocol.md section 1). Any failure -- no token, bad signature, wrong
algorithm, expired, not an access token, no jti, unknown or inactive user --
leaves AnonymousUser; the consumer then closes with 4001."""

import logging
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from django.contrib.auth.models import AnonymousUser

logger = logging.getLogger("chatapp.auth")


def _token_from_scope(scope):
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    token = (query.get("token") or [""])[0]
    if token:
        return token
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                return credentials.strip()
    return ""


@database_sync_to_async
def _user_for(raw_token):
    # Imported here: simplejwt reads its settings at import time.
    from rest_framework_simplejwt.authentication import JWTAuthentication
    from rest_framework_simplejwt.tokens import AccessToken

    try:
        token = AccessToken(raw_token)
        return JWTAuthentication().get_user(token)
    except Exception as e:  # TokenError, InvalidToken, AuthenticationFailed, bad ids
        logger.info("token refused: %s", e.__class__.__name__)
        return AnonymousUser()


class JWTAuthMiddleware(BaseMiddleware):
    async def __call__(self, scope, receive, send):
        raw = _token_from_scope(scope)
        scope = dict(scope, user=await _user_for(raw) if raw else AnonymousUser())
        return await super().__call__(scope, receive, send)
