//! Sources of record: the companies' own filings, read offline. `xbrl` turns an
//! instance or inline XBRL document into its numeric facts; drafting a figures file from
//! them builds on it.

pub mod xbrl;
