"""
Programs on another machine that follow a Pi's stream and drive its pins:
the shared subscriber (L{follow}) of C{rpisensor watch} and of the gpiozero
pin factory (L{rpisensor.gpiozero}).
"""
