//! Reports (the prepaid-money issue onwards): daily and monthly energy and money per shop,
//! building and company, in the property's time zone, each exported to Excel. Empty until the
//! first report lands.
