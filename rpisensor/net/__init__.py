"""
Connections: NUL framing on a Twisted protocol, the server connections' flow
control and admission (who, how many, how idle), listening, and the client
side (request/reply, reconnecting with backoff).
"""
