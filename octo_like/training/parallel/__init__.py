"""Where a run's arrays live and what it runs on: the device mesh and sharding rules, multi-host
start-up and per-process data made global, and the start-up report of the backend."""
