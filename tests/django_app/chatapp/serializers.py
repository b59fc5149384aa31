"""The message object of docs/protocol.md section 3, as Django REST framework
renders it: {id, sender {id, username, first_name, last_name}, content,
timestamp} with the timestamp in DRF's ISO 8601 (UTC, "Z", microseconds only
when not zero)."""

from django.contrib.auth.models import User
from rest_framework import serializers

from .models import Message


class SenderSerializer(serializers.ModelSerializer):
    class Meta:
        model = User
        fields = ["id", "username", "first_name", "last_name"]


class MessageSerializer(serializers.ModelSerializer):
    sender = SenderSerializer(read_only=True)

    class Meta:
        model = Message
        fields = ["id", "sender", "content", "timestamp"]
