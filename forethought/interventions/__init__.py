"""forethought.interventions"""
