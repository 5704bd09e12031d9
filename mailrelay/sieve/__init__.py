"""Sieve mail filtering (RFC 5228) with vacation, and ManageSieve (RFC 5804) to edit scripts.

``script`` compiles (sievelib's parser into our typed tree), ``interp`` runs a script on
one message and returns actions, ``vacation`` decides and builds auto-replies; all three
are pure. ``repo`` stores scripts and the vacation history in PostgreSQL, ``delivery``
carries actions out at local delivery, ``managesieve`` is the editing protocol.
"""
