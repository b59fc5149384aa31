"""manage.py group_send <group> <json-object> [<json-object> ...]: what
Django code (a view, a Celery task) does to reach a conversation's sockets,
async_to_sync(get_channel_layer().group_send)(group, message), once per
object, in order, from this one process."""

import json

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "group_send JSON objects to a Channels group"
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("group")
        parser.add_argument("messages", nargs="+", help="JSON objects with a string 'type'")

    def handle(self, *args, group, messages, **options):
        payloads = []
        for text in messages:
            try:
                payload = json.loads(text)
            except ValueError as e:
                raise CommandError(f"not JSON: {text!r}: {e}")
            if not isinstance(payload, dict) or not isinstance(payload.get("type"), str):
                raise CommandError(f"not a JSON object with a string 'type': {text!r}")
            payloads.append(payload)
        layer = get_channel_layer()

        async def send_all():
            for payload in payloads:
                await layer.group_send(group, payload)

        async_to_sync(send_all)()
