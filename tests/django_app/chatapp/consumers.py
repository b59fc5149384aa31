"""ChatConsumer: one WebSocket of /ws/chat/<conversation_id>/, speaking
docs/protocol.md sections 1-5 (v1 only).

- connect: an anonymous user (chatapp/auth.py refused the token) is accepted
  and closed with 4001; a user who is not a participant of the conversation
  (or a conversation that does not exist) is accepted and closed with 4003;
  otherwise the socket joins the Channels group chat_<id> and gets
  connection_established.
- chat_message: stored through the ORM (and unread_count + 1 for every other
  participant, in the same transaction), then
  group_send("chat_<id>", {"type": "chat_message_broadcast", "message": <the
  DRF-serialized message>}); every socket of the group, the sender's
  included, sends it on as new_message.
- typing: group_send({"type": "typing_indicator", user_id, username,
  is_typing}); sockets of the typist skip it.
- delete_message: a chatapp_messagedeletion row for this user; only this
  socket gets message_deleted.
- Errors (section 4) go to this socket only and never close it.

No rate limits, no typing coalescing, no pings: those are the gateway's.
Frames are json.dumps() defaults (", " / ": " separators, non-ASCII as \\u
escapes), as a Channels consumer usually writes them.
"""

import json
import logging

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.db import transaction
from django.db.models import F

from .models import ConversationParticipant, Message, MessageDeletion
from .serializers import MessageSerializer

logger = logging.getLogger("chatapp.consumers")

MAX_CONTENT = 5000
MAX_ID = 2**63 - 1

CLOSE_NOT_AUTHENTICATED = 4001
CLOSE_NOT_PARTICIPANT = 4003


class FrameError(Exception):
    """A reply error: sent as {"type": "error", "message": str(self)}."""


def group_name(conversation_id):
    return f"chat_{conversation_id}"


def parse_message_id(value):
    """The delete_message id rule: falsy -> required; a positive integer or
    an ASCII decimal string of one that fits a bigint -> it; else failed."""
    if not value:
        raise FrameError("Message ID required")
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.isascii() and value.isdigit():
        number = int(value)
    else:
        raise FrameError("Failed to delete message")
    if not 0 < number <= MAX_ID:
        raise FrameError("Failed to delete message")
    return number


class ChatConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        self.user = self.scope["user"]
        self.conversation_id = int(self.scope["url_route"]["kwargs"]["conversation_id"])
        self.group = group_name(self.conversation_id)
        self.joined = False
        # Accept first, then close: a close before accept is an HTTP 403
        # under Daphne, and the client would never see the code.
        await self.accept()
        if not self.user.is_authenticated:
            await self.close(code=CLOSE_NOT_AUTHENTICATED)
            return
        if not await self.is_participant():
            await self.close(code=CLOSE_NOT_PARTICIPANT)
            return
        await self.channel_layer.group_add(self.group, self.channel_name)
        self.joined = True
        await self.send_json({"type": "connection_established", "message": "Connected to chat"})

    async def disconnect(self, code):
        if getattr(self, "joined", False):
            await self.channel_layer.group_discard(self.group, self.channel_name)
            self.joined = False

    async def receive(self, text_data=None, bytes_data=None):
        if not getattr(self, "joined", False):
            return
        try:
            if text_data is None:
                raise FrameError("Binary frames are not supported")
            await self.handle_frame(text_data)
        except FrameError as e:
            await self.send_json({"type": "error", "message": str(e)})

    async def handle_frame(self, text):
        try:
            data = json.loads(text)
        except ValueError:
            raise FrameError("Invalid JSON")
        kind = data.get("type") if isinstance(data, dict) else None
        if kind == "chat_message":
            await self.chat_message(data)
        elif kind == "typing":
            await self.typing(data)
        elif kind == "delete_message":
            await self.delete_message(data)
        else:
            raise FrameError("Unknown message type")

    async def chat_message(self, data):
        content = data.get("content", "")
        if not isinstance(content, str):
            raise FrameError("Invalid message format")
        content = content.strip()
        if not content:
            raise FrameError("Empty message")
        if len(content) > MAX_CONTENT:
            raise FrameError("Message too long")
        if "\x00" in content:
            raise FrameError("Invalid message format")
        try:
            message = await self.store_message(content)
        except Exception:
            logger.exception("storing a message failed")
            raise FrameError("Failed to send message")
        await self.channel_layer.group_send(
            self.group, {"type": "chat_message_broadcast", "message": message}
        )

    async def typing(self, data):
        is_typing = data.get("is_typing", False)
        if not isinstance(is_typing, bool):
            raise FrameError("Invalid message format")
        await self.channel_layer.group_send(
            self.group,
            {
                "type": "typing_indicator",
                "user_id": self.user.id,
                "username": self.user.username,
                "is_typing": is_typing,
            },
        )

    async def delete_message(self, data):
        message_id = parse_message_id(data.get("message_id"))
        if not await self.delete_for_user(message_id):
            raise FrameError("Failed to delete message")
        await self.send_json({"type": "message_deleted", "message_id": message_id})

    # ---- group events (handler = event type with "." -> "_") ------------

    async def chat_message_broadcast(self, event):
        await self.send_json({"type": "new_message", "message": event["message"]})

    async def typing_indicator(self, event):
        if event["user_id"] == self.user.id:
            return
        await self.send_json(
            {
                "type": "typing",
                "user_id": event["user_id"],
                "username": event["username"],
                "is_typing": event["is_typing"],
            }
        )

    # The gateway's extensions (docs/protocol.md section 8): chatgate may
    # group_send these to chat_<id>. Channels raises on an event type without
    # a handler, which would kill this consumer, so they are handled here.

    async def chatgate_send(self, event):
        """chatgate.send: `event` as one text frame (this socket is v1: a
        v2-only event is skipped)."""
        if event.get("v2_only", False):
            return
        await self.send_json(event["event"])

    async def chatgate_disconnect(self, event):
        """chatgate.disconnect: close with `code` (default 4003) when the
        event names this socket's user."""
        if event.get("user_id") == self.user.id:
            await self.close(code=event.get("code", CLOSE_NOT_PARTICIPANT))

    # ---- helpers ----------------------------------------------------------

    async def send_json(self, payload):
        await self.send(text_data=json.dumps(payload))

    @database_sync_to_async
    def is_participant(self):
        if not 0 < self.conversation_id <= MAX_ID:
            return False
        return ConversationParticipant.objects.filter(
            conversation_id=self.conversation_id, user_id=self.user.id
        ).exists()

    @database_sync_to_async
    def store_message(self, content):
        with transaction.atomic():
            message = Message.objects.create(
                conversation_id=self.conversation_id, sender=self.user, content=content
            )
            ConversationParticipant.objects.filter(
                conversation_id=self.conversation_id
            ).exclude(user_id=self.user.id).update(unread_count=F("unread_count") + 1)
        return MessageSerializer(message).data

    @database_sync_to_async
    def delete_for_user(self, message_id):
        try:
            message = Message.objects.get(id=message_id)
        except Message.DoesNotExist:
            return False
        if not ConversationParticipant.objects.filter(
            conversation_id=message.conversation_id, user_id=self.user.id
        ).exists():
            return False
        MessageDeletion.objects.get_or_create(message=message, user=self.user)
        return True
