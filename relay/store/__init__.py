"""What relay keeps in Redis: the key layout, the records, the scripts, the queue."""
