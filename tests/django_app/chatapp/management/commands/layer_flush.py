"""manage.py layer_flush: the channel layer's flush() (the core layer deletes
every key under its prefix; the pub/sub layer drops its local state)."""

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "flush() the default channel layer"
    requires_system_checks = []

    def handle(self, *args, **options):
        async_to_sync(get_channel_layer().flush)()
