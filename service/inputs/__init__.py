"""A request's images: body parsing, URL fetching under the address policy, and the decode pool."""
