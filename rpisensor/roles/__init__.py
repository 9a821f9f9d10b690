"""
The roles of the tutorial's experiments, one package each: C{serve} (the Pi
answers), C{poll} (the PC asks), C{report} (the Pi pushes), C{collect} (the
PC keeps), and C{query} (one question from a script). Each owns its options
(C{options.py}, light to import) and its C{make_service}.
"""
