"""The receiver: the decision core, the aiohttp adapter, intake and the spool."""
