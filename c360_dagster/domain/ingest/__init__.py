"""Reading the exported data: the input contract, the loader, the Customer 360 view and its checks."""
