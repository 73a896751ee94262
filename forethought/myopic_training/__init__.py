"""forethought.myopic_training"""
