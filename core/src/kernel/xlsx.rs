//! Excel export, the pattern every list follows (DESIGN.md: API conventions): typed cells,
//! money as fen/100 in a `0.00` format, times as local times of the property's time zone, a bold
//! frozen header, fixed column widths, constant-memory mode, and totals written as values summed
//! in integer fen (a formula's cached result would read back as 0 in many readers).
//! Writing is CPU work: callers run [`Sheet::to_xlsx`] on the blocking pool.

use crate::kernel::error::{CoreError, CoreResult};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use rust_xlsxwriter::{Format, Workbook};

/// One typed cell.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Text(String),
    Int(i64),
    /// Money in fen, shown in yuan with two decimals (summed in the totals row).
    MoneyFen(i64),
    /// A quantity in hundredths (e.g. 0.01 m²), shown with two decimals, never summed.
    Decimal2(i64),
    /// A UTC instant, shown in the property's local time.
    Time(DateTime<Utc>),
    Bool(bool),
    Empty,
}

/// A column: header text and fixed width in characters.
#[derive(Debug, Clone)]
pub struct Column {
    pub header: String,
    pub width: f64,
}

impl Column {
    pub fn new(header: impl Into<String>, width: f64) -> Self {
        Column {
            header: header.into(),
            width,
        }
    }
}

/// A sheet ready to write.
#[derive(Debug, Clone)]
pub struct Sheet {
    pub name: String,
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Cell>>,
    /// A label for the totals row; money columns are summed in integer fen when set.
    pub totals: Option<String>,
}

/// The MIME type of .xlsx files.
pub const CONTENT_TYPE: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";

fn xlsx_err(e: rust_xlsxwriter::XlsxError) -> CoreError {
    CoreError::Internal(format!("xlsx: {e}"))
}

impl Sheet {
    /// Writes the workbook; times are shown in `time_zone` (an IANA name, e.g. Asia/Shanghai).
    pub fn to_xlsx(&self, time_zone: &str) -> CoreResult<Vec<u8>> {
        let tz: Tz = crate::kernel::clock::time_zone(time_zone);
        let mut workbook = Workbook::new();
        let header = Format::new().set_bold();
        let money = Format::new().set_num_format("0.00");
        let time = Format::new().set_num_format("yyyy-mm-dd hh:mm:ss");
        let sheet = workbook
            .add_worksheet_with_constant_memory()
            .map_err(xlsx_err)?;
        sheet.set_name(&self.name).map_err(xlsx_err)?;
        for (col, column) in self.columns.iter().enumerate() {
            let col = u16::try_from(col).expect("sheets have few columns");
            sheet
                .set_column_width(col, column.width)
                .map_err(xlsx_err)?;
            sheet
                .write_string_with_format(0, col, &column.header, &header)
                .map_err(xlsx_err)?;
        }
        sheet.set_freeze_panes(1, 0).map_err(xlsx_err)?;
        let mut totals_fen = vec![0i64; self.columns.len()];
        let mut row_index: u32 = 1;
        for row in &self.rows {
            for (col, cell) in row.iter().enumerate() {
                let c = u16::try_from(col).expect("sheets have few columns");
                match cell {
                    Cell::Text(text) => {
                        sheet.write_string(row_index, c, text).map_err(xlsx_err)?;
                    }
                    Cell::Int(n) => {
                        // Excel numbers are doubles: exact up to 2^53, far beyond our counts.
                        sheet
                            .write_number(row_index, c, *n as f64)
                            .map_err(xlsx_err)?;
                    }
                    Cell::MoneyFen(fen) => {
                        totals_fen[col] = totals_fen[col]
                            .checked_add(*fen)
                            .ok_or_else(|| CoreError::Internal("export total overflows".into()))?;
                        sheet
                            .write_number_with_format(row_index, c, *fen as f64 / 100.0, &money)
                            .map_err(xlsx_err)?;
                    }
                    Cell::Decimal2(hundredths) => {
                        sheet
                            .write_number_with_format(
                                row_index,
                                c,
                                *hundredths as f64 / 100.0,
                                &money,
                            )
                            .map_err(xlsx_err)?;
                    }
                    Cell::Time(at) => {
                        let local = at.with_timezone(&tz).naive_local();
                        sheet
                            .write_datetime_with_format(row_index, c, local, &time)
                            .map_err(xlsx_err)?;
                    }
                    Cell::Bool(b) => {
                        sheet.write_boolean(row_index, c, *b).map_err(xlsx_err)?;
                    }
                    Cell::Empty => {}
                }
            }
            row_index += 1;
        }
        if let Some(label) = &self.totals {
            sheet
                .write_string_with_format(row_index, 0, label, &header)
                .map_err(xlsx_err)?;
            let money_columns = self.rows.first().map(|r| {
                r.iter()
                    .enumerate()
                    .filter(|(_, c)| matches!(c, Cell::MoneyFen(_)))
                    .map(|(i, _)| i)
                    .collect::<Vec<_>>()
            });
            for col in money_columns.unwrap_or_default() {
                let c = u16::try_from(col).expect("sheets have few columns");
                sheet
                    .write_number_with_format(row_index, c, totals_fen[col] as f64 / 100.0, &money)
                    .map_err(xlsx_err)?;
            }
        }
        workbook.save_to_buffer().map_err(xlsx_err)
    }
}
