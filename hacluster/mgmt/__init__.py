"""Management plane: pool database service, API, CLI, alerts."""
