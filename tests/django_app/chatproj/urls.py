"""No HTTP views: the project exists for its WebSocket consumer (chatproj/asgi.py)."""

urlpatterns = []
