"""Device and gateway profiles (TOML), read by the agent, the simulator and the hub."""
