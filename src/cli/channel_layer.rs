//! The `--channel-layer*` flags: Django's `CHANNEL_LAYERS` settings under
//! Django's names and defaults (docs/protocol.md §11,
//! docs/migrating-from-channels.md).
//!
//! Must never: print an encryption key (the variable's values are hidden
//! from `--help`, and `ChannelLayerConfig`'s `Debug` shows only a count).

use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::channel_layer::{ChannelLayerConfig, LayerKind, SerializerFormat};

/// Flags of the Channels layer (off unless `--channel-layer` is given).
#[derive(Debug, Args)]
pub struct ChannelLayerArgs {
    /// Join the Django app's Channels layer on this Redis (repeat in the order of Django's CHANNEL_LAYERS hosts; the variable takes several comma-separated).
    #[arg(
        long = "channel-layer",
        global = true,
        env = "CHATGATE_CHANNEL_LAYER",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub hosts: Vec<String>,
    /// Which channels_redis layer Django runs: core (RedisChannelLayer) or pubsub (RedisPubSubChannelLayer).
    #[arg(
        long = "channel-layer-kind",
        global = true,
        env = "CHATGATE_CHANNEL_LAYER_KIND",
        default_value = "core"
    )]
    pub kind: KindArg,
    /// Django's prefix.
    #[arg(
        long = "channel-layer-prefix",
        global = true,
        env = "CHATGATE_CHANNEL_LAYER_PREFIX",
        default_value = "asgi"
    )]
    pub prefix: String,
    /// Django's expiry: seconds (or e.g. 1m) a message waits before it is dropped.
    #[arg(long = "channel-layer-expiry", global = true, env = "CHATGATE_CHANNEL_LAYER_EXPIRY", default_value = "60", value_parser = parse_seconds)]
    pub expiry: Duration,
    /// Django's group_expiry: seconds (or e.g. 1d) a group member lives without being re-added.
    #[arg(long = "channel-layer-group-expiry", global = true, env = "CHATGATE_CHANNEL_LAYER_GROUP_EXPIRY", default_value = "86400", value_parser = parse_seconds)]
    pub group_expiry: Duration,
    /// Django's capacity: messages waiting per Daphne channel, beyond which group sends drop.
    #[arg(
        long = "channel-layer-capacity",
        global = true,
        env = "CHATGATE_CHANNEL_LAYER_CAPACITY",
        default_value_t = 100
    )]
    pub capacity: usize,
    /// One of Django's symmetric_encryption_keys (repeat in Django's order: the first encrypts, any decrypts; the variable takes several comma-separated).
    #[arg(
        long = "channel-layer-encryption-key",
        global = true,
        env = "CHATGATE_CHANNEL_LAYER_ENCRYPTION_KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub encryption_keys: Vec<String>,
    /// Django's serializer_format: msgpack or json.
    #[arg(
        long = "channel-layer-serializer",
        global = true,
        env = "CHATGATE_CHANNEL_LAYER_SERIALIZER",
        default_value = "msgpack"
    )]
    pub serializer: FormatArg,
    /// Django's random_prefix_length (core layer).
    #[arg(
        long = "channel-layer-random-prefix-length",
        global = true,
        env = "CHATGATE_CHANNEL_LAYER_RANDOM_PREFIX_LENGTH",
        default_value_t = 12
    )]
    pub random_prefix_length: usize,
    /// The group of a conversation, {id} replaced by its id (the consumer's group name).
    #[arg(
        long = "channel-layer-group",
        global = true,
        env = "CHATGATE_CHANNEL_LAYER_GROUP",
        default_value = "chat_{id}"
    )]
    pub group: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    Core,
    Pubsub,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    Msgpack,
    Json,
}

impl ChannelLayerArgs {
    /// The layer's settings, or `None` without `--channel-layer`.
    pub fn config(&self, node_id: &str) -> Option<ChannelLayerConfig> {
        if self.hosts.is_empty() {
            return None;
        }
        let mut c = ChannelLayerConfig::new(self.hosts.clone(), node_id);
        c.kind = match self.kind {
            KindArg::Core => LayerKind::Core,
            KindArg::Pubsub => LayerKind::PubSub,
        };
        c.prefix = self.prefix.clone();
        c.expiry = self.expiry;
        c.group_expiry = self.group_expiry;
        c.capacity = self.capacity;
        c.encryption_keys = self.encryption_keys.clone();
        c.format = match self.serializer {
            FormatArg::Msgpack => SerializerFormat::Msgpack,
            FormatArg::Json => SerializerFormat::Json,
        };
        c.random_prefix_length = self.random_prefix_length;
        c.group_template = self.group.clone();
        Some(c)
    }
}

/// Whole seconds as Django writes them (`60`), or a duration (`1m`).
fn parse_seconds(s: &str) -> Result<Duration, String> {
    match s.trim().parse::<u64>() {
        Ok(n) => Ok(Duration::from_secs(n)),
        Err(_) => humantime::parse_duration(s).map_err(|e| e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_taken_as_django_writes_them() {
        assert_eq!(parse_seconds("60"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_seconds("1d"), Ok(Duration::from_secs(86_400)));
        assert!(parse_seconds("soon").is_err());
    }
}
