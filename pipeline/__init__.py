"""The runtime: process supervision, queues, shared-memory frames, messages, config, CLI, metrics."""
