"""manage.py group_send <group> <json-object>: what Django code (a view, a
Celery task) does to reach a conversation's sockets,
async_to_sync(get_channel_layer().group_send)(group, message)."""

import json

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "group_send a JSON object to a Channels group"
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("group")
        parser.add_argument("message", help="a JSON object with a string 'type'")

    def handle(self, *args, group, message, **options):
        try:
            payload = json.loads(message)
        except ValueError as e:
            raise CommandError(f"message is not JSON: {e}")
        if not isinstance(payload, dict) or not isinstance(payload.get("type"), str):
            raise CommandError("message must be a JSON object with a string 'type'")
        async_to_sync(get_channel_layer().group_send)(group, payload)
