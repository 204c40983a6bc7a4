#![allow(clippy::unwrap_used)]
#[test]
fn dump() {
    let n = 4096;
    let mut x = vec![0f32; n];
    let mut s = 12345u64;
    for v in x.iter_mut() {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        *v = ((s >> 33) as f32 / (1u64 << 31) as f32 - 0.5) * 3.0;
    }
    let mut q = vec![0u8; zeta_gguf::GgmlType::Q8_1.row_bytes(n as u64).unwrap() as usize];
    zeta_quant::quantize(zeta_gguf::GgmlType::Q8_1, &x, &mut q).unwrap();
    std::fs::write("/tmp/act.f32", bytemuck::cast_slice::<f32, u8>(&x)).unwrap();
    std::fs::write("/tmp/act.q81", &q).unwrap();
    let mut q0 = vec![0u8; zeta_gguf::GgmlType::Q8_0.row_bytes(n as u64).unwrap() as usize];
    zeta_quant::quantize(zeta_gguf::GgmlType::Q8_0, &x, &mut q0).unwrap();
    std::fs::write("/tmp/act.q80", &q0).unwrap();
}
