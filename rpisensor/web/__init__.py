"""
The web side of the roles (C{--web ENDPOINT}): a page with a tile and a plot
per sensor, kept live by Server-Sent Events, a JSON API and C{/metrics}.
"""
