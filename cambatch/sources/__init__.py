"""Which images a run reads: folders and files (`discover`), lists with labels (`lists`), and the shard a
process owns (`shard`).
"""
