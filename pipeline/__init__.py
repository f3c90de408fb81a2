"""The message and wire protocol (messages, wire, subscriber, recording, publisher) and, above it, the
runtime kernel (stage contract, supervisor, shared-memory frames, metrics), which knows no stage."""
