"""The operator's configuration: settings from the environment, routes.toml, reloads."""
