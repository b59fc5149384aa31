"""manage.py layer_info: the effective channel layer as one JSON line (the
backend, the installed versions, the config Django passes, and whether the
layer object holds a Fernet crypter), so a test can check that its settings
reached channels_redis."""

import json
from importlib.metadata import version

from channels.layers import get_channel_layer
from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "print the default channel layer's configuration as JSON"
    requires_system_checks = []

    def handle(self, *args, **options):
        layer = get_channel_layer()
        config = dict(settings.CHANNEL_LAYERS["default"]["CONFIG"])
        if "symmetric_encryption_keys" in config:
            config["symmetric_encryption_keys"] = len(config["symmetric_encryption_keys"])
        # 4.1 keeps the crypter on the core layer, 4.2+ on its serializer;
        # vars(): 4.1's pub/sub layer proxies unknown attributes to a
        # per-event-loop layer, which needs a running loop.
        serializer = vars(layer).get("_serializer", layer)
        info = {
            "encrypted": vars(serializer).get("crypter") is not None,
            "backend": f"{type(layer).__module__}.{type(layer).__qualname__}",
            "channels_redis": version("channels_redis"),
            "channels": version("channels"),
            "django": version("django"),
            "redis": version("redis"),
            "config": config,
        }
        self.stdout.write(json.dumps(info, sort_keys=True))
