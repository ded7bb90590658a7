"""The synthetic crawl: a compositional image world, Common Crawl-style WAT files with a
ground truth for every image link, and a loopback web server with injectable faults."""
