"""
The reporting client role (the tutorial's DataClient3 on a Pi): sample the
inputs and push their text to a server, which may be far away on the
Internet; keep sampling while the link is down.
"""
