"""The turn: a Listener per source (when a turn begins and ends), and the Responder (how it is answered)."""
