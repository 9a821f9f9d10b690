"""
The sensor server role (the tutorial's DataServer1/2 on a Pi): answers
C{go} and a few more commands with the state of the inputs, to any number of
clients at once.
"""
