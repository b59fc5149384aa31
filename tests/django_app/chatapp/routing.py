"""WebSocket routes: /ws/chat/<conversation_id>/ (the trailing slash is optional)."""

from django.urls import re_path

from .consumers import ChatConsumer

websocket_urlpatterns = [
    re_path(r"^ws/chat/(?P<conversation_id>[0-9]+)/?$", ChatConsumer.as_asgi()),
]
