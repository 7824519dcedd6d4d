"""The voiced WebSocket protocol: typed messages, binary audio framing, and the client library."""
