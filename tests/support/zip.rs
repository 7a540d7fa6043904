//! Reads a zip file's central directory: entry names and Unix modes, which is what
//! Grafana's plugin validator looks at (top folder, executable bits).

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Names and Unix modes of a zip file's entries, from its central directory.
pub fn entries(path: &Path) -> Vec<(String, u32)> {
    let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let len = f.seek(SeekFrom::End(0)).unwrap();
    // End of central directory: 22 bytes plus a comment of at most 64 KiB.
    let tail_len = len.min(22 + 65_535);
    f.seek(SeekFrom::Start(len - tail_len)).unwrap();
    let mut tail = vec![0; tail_len as usize];
    f.read_exact(&mut tail).unwrap();
    let eocd = (0..=tail.len() - 22)
        .rev()
        .find(|&i| tail[i..i + 4] == [0x50, 0x4b, 0x05, 0x06])
        .expect("end of central directory record");
    let u16_at = |b: &[u8], i: usize| u16::from_le_bytes([b[i], b[i + 1]]) as usize;
    let u32_at = |b: &[u8], i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let count = u16_at(&tail, eocd + 10);
    let dir_size = u32_at(&tail, eocd + 12) as usize;
    let dir_offset = u32_at(&tail, eocd + 16) as u64;
    f.seek(SeekFrom::Start(dir_offset)).unwrap();
    let mut dir = vec![0; dir_size];
    f.read_exact(&mut dir).unwrap();
    let mut entries = Vec::with_capacity(count);
    let mut i = 0;
    for _ in 0..count {
        assert_eq!(
            dir[i..i + 4],
            [0x50, 0x4b, 0x01, 0x02],
            "central directory entry"
        );
        let name_len = u16_at(&dir, i + 28);
        let extra_len = u16_at(&dir, i + 30);
        let comment_len = u16_at(&dir, i + 32);
        let mode = u32_at(&dir, i + 38) >> 16;
        let name = String::from_utf8_lossy(&dir[i + 46..i + 46 + name_len]).into_owned();
        entries.push((name, mode));
        i += 46 + name_len + extra_len + comment_len;
    }
    entries
}
