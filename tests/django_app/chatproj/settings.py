"""Settings of the interop test project: a small Django Channels chat app
that speaks the protocol of docs/protocol.md sections 1-5, used by the Rust
tests (tests/django_support/mod.rs) as the reference side beside chatgate.

Everything comes from environment variables (defaults in brackets):

Database (PostgreSQL; the test creates it from tests/fixtures/django-schema.sql,
so every model is unmanaged and nothing is ever migrated):
  CHATAPP_DB_NAME        database name [chatapp]
  CHATAPP_DB_HOST        host [127.0.0.1]
  CHATAPP_DB_PORT        port [5432]
  CHATAPP_DB_USER        user [postgres]
  CHATAPP_DB_PASSWORD    password [empty]

Authentication (djangorestframework-simplejwt, HS256, claims user_id /
token_type "access" / jti: what chatgate's JwtConfig::new mints):
  CHATAPP_JWT_SECRET     SIMPLE_JWT SIGNING_KEY, also Django's SECRET_KEY
                         [chatapp-insecure-test-secret]
  CHATAPP_ALLOWED_HOSTS  comma-separated ALLOWED_HOSTS, checked against the
                         Origin header (AllowedHostsOriginValidator) [*]

Channel layer (CHANNEL_LAYERS["default"]; names and defaults are channels_redis's):
  CHATAPP_LAYER_KIND     core (channels_redis.core.RedisChannelLayer) or
                         pubsub (channels_redis.pubsub.RedisPubSubChannelLayer) [core]
  CHATAPP_LAYER_HOSTS    comma-separated Redis URLs, in `hosts` order
                         [redis://127.0.0.1:6379/0]
  CHATAPP_LAYER_PREFIX   prefix [asgi]
  CHATAPP_LAYER_EXPIRY             expiry, seconds (core) [60]
  CHATAPP_LAYER_GROUP_EXPIRY       group_expiry, seconds (core) [86400]
  CHATAPP_LAYER_CAPACITY           capacity (core) [100]
  CHATAPP_LAYER_KEYS               symmetric_encryption_keys, comma-separated
                                   (core on 4.x; pubsub from 4.2 on) [none]
  CHATAPP_LAYER_FORMAT             serializer_format, msgpack or json (4.2 on) [msgpack]
  CHATAPP_LAYER_RANDOM_PREFIX_LENGTH  random_prefix_length (core, 4.2 on) [12]

A layer option is passed only when its variable is set. One the installed
channels_redis does not support is an error at startup, never silently
ignored (channels_redis 4.1's pub/sub layer swallows unknown keyword
arguments, encryption keys included).
"""

import os
from importlib.metadata import version as _dist_version

from django.core.exceptions import ImproperlyConfigured


def _env(name, default=None):
    value = os.environ.get(name, "")
    return value if value != "" else default


def _int_env(name):
    value = _env(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError as e:
        raise ImproperlyConfigured(f"{name} must be an integer, not {value!r}") from e


def _csv(name, default=None):
    value = _env(name)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


SECRET_KEY = _env("CHATAPP_JWT_SECRET", "chatapp-insecure-test-secret")
DEBUG = False
ALLOWED_HOSTS = _csv("CHATAPP_ALLOWED_HOSTS", ["*"])

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "rest_framework",
    "channels",
    "chatapp",
]

ROOT_URLCONF = "chatproj.urls"
ASGI_APPLICATION = "chatproj.asgi.application"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _env("CHATAPP_DB_NAME", "chatapp"),
        "HOST": _env("CHATAPP_DB_HOST", "127.0.0.1"),
        "PORT": _env("CHATAPP_DB_PORT", "5432"),
        "USER": _env("CHATAPP_DB_USER", "postgres"),
        "PASSWORD": _env("CHATAPP_DB_PASSWORD", ""),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# UTC: DRF renders datetimes in the current time zone and turns "+00:00"
# into "Z" (the timestamp format of protocol section 3).
USE_TZ = True
TIME_ZONE = "UTC"
USE_I18N = False

SIMPLE_JWT = {
    "ALGORITHM": "HS256",
    "SIGNING_KEY": SECRET_KEY,
    "USER_ID_FIELD": "id",
    "USER_ID_CLAIM": "user_id",
    "TOKEN_TYPE_CLAIM": "token_type",
    "JTI_CLAIM": "jti",
    "LEEWAY": 0,
    "UPDATE_LAST_LOGIN": False,
}


def _channels_redis_version():
    parts = _dist_version("channels_redis").split(".")
    return (int(parts[0]), int(parts[1]))


def _channel_layer():
    kind = _env("CHATAPP_LAYER_KIND", "core")
    backends = {
        "core": "channels_redis.core.RedisChannelLayer",
        "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
    }
    if kind not in backends:
        raise ImproperlyConfigured(f"CHATAPP_LAYER_KIND must be core or pubsub, not {kind!r}")
    installed = _channels_redis_version()
    config = {"hosts": _csv("CHATAPP_LAYER_HOSTS", ["redis://127.0.0.1:6379/0"])}
    prefix = _env("CHATAPP_LAYER_PREFIX")
    if prefix is not None:
        config["prefix"] = prefix
    # (option, value, the kinds that honour it, from which channels_redis version)
    options = [
        ("expiry", _int_env("CHATAPP_LAYER_EXPIRY"), {"core"}, (4, 0)),
        ("group_expiry", _int_env("CHATAPP_LAYER_GROUP_EXPIRY"), {"core"}, (4, 0)),
        ("capacity", _int_env("CHATAPP_LAYER_CAPACITY"), {"core"}, (4, 0)),
        (
            "symmetric_encryption_keys",
            _csv("CHATAPP_LAYER_KEYS"),
            {"core", "pubsub"},
            (4, 0) if kind == "core" else (4, 2),
        ),
        ("serializer_format", _env("CHATAPP_LAYER_FORMAT"), {"core", "pubsub"}, (4, 2)),
        (
            "random_prefix_length",
            _int_env("CHATAPP_LAYER_RANDOM_PREFIX_LENGTH"),
            {"core"},
            (4, 2),
        ),
    ]
    for name, value, kinds, since in options:
        if value is None:
            continue
        if kind not in kinds or installed < since:
            raise ImproperlyConfigured(
                f"{name} is not supported by the {kind} layer of channels_redis "
                f"{'.'.join(map(str, installed))}"
            )
        config[name] = value
    if config.get("serializer_format", "msgpack") not in ("msgpack", "json"):
        raise ImproperlyConfigured("CHATAPP_LAYER_FORMAT must be msgpack or json")
    return {"BACKEND": backends[kind], "CONFIG": config}


CHANNEL_LAYERS = {"default": _channel_layer()}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {"chatapp": {"handlers": ["stderr"], "level": "INFO"}},
}
