"""ASGI entry point for Daphne: `daphne chatproj.asgi:application`.

HTTP goes to Django (no views); WebSockets pass the Origin check
(AllowedHostsOriginValidator: ALLOWED_HOSTS), then JWTAuthMiddleware, then
the URL router of chatapp/routing.py."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatproj.settings")
# Before anything that imports models.
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from chatapp.auth import JWTAuthMiddleware  # noqa: E402
from chatapp.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            JWTAuthMiddleware(URLRouter(websocket_urlpatterns))
        ),
    }
)
