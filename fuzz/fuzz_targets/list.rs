//! List parsing: any bytes under any list name give rows or a file-level error, never a
//! panic. The first byte picks the name's extension.
#![no_main]

use libfuzzer_sys::fuzz_target;

const NAMES: [&str; 6] = [
    "list.csv",
    "list.txt",
    "list.xlsx",
    "list.xls",
    "list.ods",
    "list.xlsb",
];

fuzz_target!(|data: &[u8]| {
    let Some((first, rest)) = data.split_first() else {
        return;
    };
    let name = NAMES[*first as usize % NAMES.len()];
    if let Ok((headers, rows)) = intake::list::read_all(name, rest.to_vec(), 100_000) {
        // Row numbers only grow.
        let lines: Vec<u64> = rows
            .iter()
            .map(|r| match r {
                Ok(row) => row.line,
                Err(e) => e.line,
            })
            .collect();
        assert!(lines.windows(2).all(|w| w[0] <= w[1]), "{lines:?}");
        assert!(!headers.is_empty());
    }
});
