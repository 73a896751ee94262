"""forethought.probes"""
