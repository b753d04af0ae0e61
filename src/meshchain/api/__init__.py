"""The node's faces for programs: JSON-RPC 2.0 over HTTP and WebSocket, and /metrics."""
