"""The WebSocket server: auth, origin, limits, per-client queues. `VoicedServer` and `TurnHandler` are its surface."""
