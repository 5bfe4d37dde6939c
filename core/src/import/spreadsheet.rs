//! Reading uploaded spreadsheets without letting a hostile file take the process down.
//!
//! A tenant controls every byte of an upload. calamine's `Range` is a dense rows × columns grid
//! sized by the cells' positions, so a 1.5 KB .xlsx with only A1 and XFD1048576 asks for
//! ~17 billion cells and the allocator aborts the whole process (no panic to catch). An .xlsx is
//! also a zip, so a small file can unpack to gigabytes. This module therefore:
//! 1. refuses a zip with too many entries, and unpacks every entry once into a counting sink,
//!    stopping at [`UNPACKED_BYTES_MAX`] in all (deflate is deterministic, so what calamine
//!    unpacks afterwards is exactly what was measured);
//! 2. checks the sheet's declared dimension against the import limits before reading a cell;
//! 3. streams the cells (`worksheet_cells_reader`) and refuses the first one beyond the limits,
//!    building the rows sparsely so memory follows the cells really present.
//!
//! Only .xlsx and UTF-8 .csv are read: the legacy .xls and .ods readers of calamine build the
//! same dense grid with no streaming alternative, so those files are refused with a hint to save
//! them as .xlsx.

use crate::kernel::error::{CoreError, CoreResult};
use calamine::{DataRef, Reader, Xlsx};
use std::io::{Cursor, Read};

/// Data rows one file may hold (the header comes on top).
pub const ROWS_MAX: usize = 20_000;
/// Columns a sheet may use; the templates have fewer than 20.
pub const COLUMNS_MAX: usize = 64;
/// Cells (empty ones included) the reader walks before giving up.
pub const CELLS_MAX: usize = (ROWS_MAX + 1) * COLUMNS_MAX;
/// Bytes all entries of an .xlsx may unpack to.
pub const UNPACKED_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Entries an .xlsx may have (a real workbook has a dozen or two).
pub const ZIP_ENTRIES_MAX: usize = 1_000;

fn bad(why: impl Into<String>) -> CoreError {
    CoreError::field("file", why)
}

/// Reads the first sheet of an .xlsx, or a UTF-8 CSV (by `filename`), into text rows of at
/// most [`ROWS_MAX`] + 1 rows and [`COLUMNS_MAX`] columns.
pub fn read_rows(bytes: &[u8], filename: &str) -> CoreResult<Vec<Vec<String>>> {
    let lower = filename.to_ascii_lowercase();
    if lower.ends_with(".csv") {
        return read_csv(bytes);
    }
    if lower.ends_with(".xls") || lower.ends_with(".ods") || lower.ends_with(".xlsb") {
        return Err(bad(
            "only .xlsx and .csv files are read: save the sheet as .xlsx (Excel workbook)",
        ));
    }
    read_xlsx(bytes)
}

fn read_csv(bytes: &[u8]) -> CoreResult<Vec<Vec<String>>> {
    let text = std::str::from_utf8(bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes))
        .map_err(|_| bad("a CSV file must be UTF-8"))?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| bad(format!("not a readable CSV file: {e}")))?;
        if rows.len() > ROWS_MAX {
            return Err(too_many_rows());
        }
        if record.len() > COLUMNS_MAX {
            return Err(too_many_columns());
        }
        rows.push(record.iter().map(|v| v.trim().to_owned()).collect());
    }
    Ok(rows)
}

fn too_many_rows() -> CoreError {
    bad(format!("at most {ROWS_MAX} rows per file"))
}

fn too_many_columns() -> CoreError {
    bad(format!("at most {COLUMNS_MAX} columns per sheet"))
}

/// Unpacks every entry once, counting, and refuses the file past the limits.
fn check_zip(bytes: &[u8]) -> CoreResult<()> {
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|_| bad("not a readable spreadsheet (.xlsx)"))?;
    if archive.len() > ZIP_ENTRIES_MAX {
        return Err(bad("not a readable .xlsx file (too many parts)"));
    }
    let mut left = UNPACKED_BYTES_MAX;
    for i in 0..archive.len() {
        let entry = archive
            .by_index(i)
            .map_err(|_| bad("not a readable .xlsx file"))?;
        // Read one byte past what is left, so an entry that is too big is seen as such.
        let mut limited = entry.take(left + 1);
        let unpacked = std::io::copy(&mut limited, &mut std::io::sink())
            .map_err(|_| bad("not a readable .xlsx file (a damaged part)"))?;
        left = left
            .checked_sub(unpacked)
            .ok_or_else(|| bad("the file unpacks to more than 64 MB; it is not an import sheet"))?;
    }
    Ok(())
}

fn cell_text(value: &DataRef<'_>) -> String {
    match value {
        DataRef::Empty => String::new(),
        DataRef::String(s) | DataRef::DateTimeIso(s) | DataRef::DurationIso(s) => {
            s.trim().to_owned()
        }
        DataRef::SharedString(s) => s.trim().to_owned(),
        // Whole numbers come without ".0" (meter numbers, addresses typed as numbers).
        DataRef::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", *f as i64),
        DataRef::Float(f) => f.to_string(),
        DataRef::Int(i) => i.to_string(),
        DataRef::Bool(b) => b.to_string(),
        DataRef::DateTime(dt) => dt
            .as_datetime()
            .map(|d| d.date().to_string())
            .unwrap_or_default(),
        DataRef::Error(e) => format!("#{e:?}"),
    }
}

fn read_xlsx(bytes: &[u8]) -> CoreResult<Vec<Vec<String>>> {
    check_zip(bytes)?;
    let mut book: Xlsx<_> = Xlsx::new(Cursor::new(bytes))
        .map_err(|e| bad(format!("not a readable spreadsheet: {e}")))?;
    let first = book
        .sheet_names()
        .first()
        .cloned()
        .ok_or_else(|| bad("the workbook has no sheet"))?;
    let mut cells = book
        .worksheet_cells_reader(&first)
        .map_err(|e| bad(format!("the first sheet cannot be read: {e}")))?;
    let declared = cells.dimensions();
    if declared.end.0 as usize > ROWS_MAX {
        return Err(too_many_rows());
    }
    if declared.end.1 as usize >= COLUMNS_MAX {
        return Err(too_many_columns());
    }
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut walked = 0usize;
    while let Some(cell) = cells
        .next_cell()
        .map_err(|e| bad(format!("the first sheet cannot be read: {e}")))?
    {
        walked += 1;
        if walked > CELLS_MAX {
            return Err(bad("the sheet has too many cells"));
        }
        let (row, column) = cell.get_position();
        let (row, column) = (row as usize, column as usize);
        let text = cell_text(cell.get_value());
        if text.is_empty() {
            // Empty (formatted) cells anywhere are harmless and take no room.
            continue;
        }
        if row > ROWS_MAX {
            return Err(too_many_rows());
        }
        if column >= COLUMNS_MAX {
            return Err(too_many_columns());
        }
        if rows.len() <= row {
            rows.resize_with(row + 1, Vec::new);
        }
        let cells_of_row = &mut rows[row];
        if cells_of_row.len() <= column {
            cells_of_row.resize(column + 1, String::new());
        }
        cells_of_row[column] = text;
    }
    // Like a sheet's used range, the rows start at the first one with text.
    let leading_empty = rows.iter().take_while(|r| r.is_empty()).count();
    rows.drain(..leading_empty);
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A minimal .xlsx whose one sheet has `cells` (reference, inline text) and declares
    /// `dimension`.
    pub(crate) fn xlsx_with(dimension: &str, cells: &[(&str, &str)]) -> Vec<u8> {
        let mut sheet = format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><dimension ref="{dimension}"/><sheetData>"#
        );
        for (reference, text) in cells {
            let row: String = reference.chars().filter(|c| c.is_ascii_digit()).collect();
            sheet.push_str(&format!(
                r#"<row r="{row}"><c r="{reference}" t="inlineStr"><is><t>{text}</t></is></c></row>"#
            ));
        }
        sheet.push_str("</sheetData></worksheet>");
        let parts: [(&str, String); 4] = [
            ("[Content_Types].xml", r#"<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/><Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/></Types>"#.into()),
            ("_rels/.rels", r#"<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>"#.into()),
            ("xl/workbook.xml", r#"<?xml version="1.0" encoding="UTF-8"?><workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"><sheets><sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>"#.into()),
            ("xl/_rels/workbook.xml.rels", r#"<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/></Relationships>"#.into()),
        ];
        let mut out = Cursor::new(Vec::new());
        let mut zip = zip::ZipWriter::new(&mut out);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, body) in parts.iter() {
            zip.start_file(*name, options).unwrap();
            zip.write_all(body.as_bytes()).unwrap();
        }
        zip.start_file("xl/worksheets/sheet1.xml", options).unwrap();
        zip.write_all(sheet.as_bytes()).unwrap();
        zip.finish().unwrap();
        out.into_inner()
    }

    fn message(err: CoreError) -> String {
        match err {
            CoreError::Validation { fields, .. } => fields["file"].clone(),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn a_small_sheet_reads_sparsely_into_rows() {
        let file = xlsx_with("A1:C3", &[("A1", "编号 number"), ("C3", "x")]);
        let rows = read_rows(&file, "shops.xlsx").unwrap();
        assert_eq!(
            rows,
            vec![
                vec!["编号 number".to_owned()],
                vec![],
                vec![String::new(), String::new(), "x".to_owned()]
            ]
        );
    }

    #[test]
    fn a_sheet_declaring_the_whole_grid_is_refused_before_a_cell_is_read() {
        let file = xlsx_with("A1:XFD1048576", &[("A1", "a"), ("XFD1048576", "b")]);
        assert!(message(read_rows(&file, "bomb.xlsx").unwrap_err()).contains("rows"));
    }

    #[test]
    fn a_far_cell_is_refused_whatever_the_sheet_declares() {
        let far_row = xlsx_with("A1:B2", &[("A1", "a"), ("A1048576", "b")]);
        assert!(message(read_rows(&far_row, "x.xlsx").unwrap_err()).contains("rows"));
        let far_column = xlsx_with("A1:B2", &[("A1", "a"), ("XFD1", "b")]);
        assert!(message(read_rows(&far_column, "x.xlsx").unwrap_err()).contains("columns"));
    }

    #[test]
    fn a_zip_that_unpacks_too_far_is_refused() {
        let mut out = Cursor::new(Vec::new());
        let mut zip = zip::ZipWriter::new(&mut out);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        zip.start_file("xl/sharedStrings.xml", options).unwrap();
        let block = vec![b'a'; 1 << 20];
        for _ in 0..65 {
            zip.write_all(&block).unwrap();
        }
        zip.finish().unwrap();
        let file = out.into_inner();
        assert!(file.len() < 1 << 20, "deflate packs it small");
        assert!(message(read_rows(&file, "x.xlsx").unwrap_err()).contains("64 MB"));
    }

    #[test]
    fn legacy_formats_and_garbage_are_refused_with_a_hint() {
        assert!(message(read_rows(b"\xd0\xcf\x11\xe0", "old.xls").unwrap_err()).contains(".xlsx"));
        assert!(read_rows(b"not a workbook", "x.xlsx").is_err());
        assert!(read_rows(&[0xff, 0xfe, 0x00], "x.csv").is_err());
    }

    #[test]
    fn a_csv_past_the_limits_is_refused() {
        let wide = vec!["x"; COLUMNS_MAX + 1].join(",");
        assert!(message(read_rows(wide.as_bytes(), "x.csv").unwrap_err()).contains("columns"));
        let long = "a\n".repeat(ROWS_MAX + 2);
        assert!(message(read_rows(long.as_bytes(), "x.csv").unwrap_err()).contains("rows"));
        assert_eq!(
            read_rows("a\n".repeat(ROWS_MAX + 1).as_bytes(), "x.csv")
                .unwrap()
                .len(),
            ROWS_MAX + 1
        );
    }
}
