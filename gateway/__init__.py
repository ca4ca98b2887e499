"""The grpc.aio gateway: service handlers, error mapping, sweeper and CLI."""
