//! Topic names, topic filters and the structures that match them.
