"""The fleet simulator: many real edge_sdk clients against a real aggregator, in
simulated time. Public APIs only: edge_sdk's client and the aggregator's service/app."""
