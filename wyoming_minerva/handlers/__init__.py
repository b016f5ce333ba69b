"""Wyoming handlers: one object per connection, events in, events out. No sockets, no model loading."""
