"""Speech out: streaming reply text -> speakable clauses -> TTS PCM chunks -> local speaker."""
