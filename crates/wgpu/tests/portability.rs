//! Portability: every shader specialisation the ops use must parse and
//! validate with naga and translate to MSL (Metal), SPIR-V (Vulkan) and HLSL
//! (DX12), stay within Metal's workgroup-memory budget and use no 64-bit
//! atomics (each variant's `workgroup_budget`: 16 KiB, or the guaranteed
//! 32 KiB for the few that a context takes only where the device allows it).
//! Needs no GPU. Exception: the cooperative-matrix matmul (`needs_coop`),
//! which only runs on Vulkan adapters that report its shape, is checked for
//! SPIR-V alone.
#![allow(clippy::unwrap_used)]

use naga::valid::{Capabilities, ValidationFlags, Validator};
use zeta_wgpu::pipeline::WORKGROUP_BYTES;

fn check(label: &str, src: &str, subgroups: bool, coop: bool, budget: u32) -> Result<(), String> {
    let module = naga::front::wgsl::parse_str(src).map_err(|e| e.emit_to_string(src))?;
    // Only the subgroup and cooperative-matrix variants may need a
    // capability; everything else must validate with none at all.
    let mut caps = if coop {
        Capabilities::COOPERATIVE_MATRIX | Capabilities::SHADER_FLOAT16
    } else if subgroups {
        Capabilities::SUBGROUP
    } else {
        Capabilities::empty()
    };
    // `unpack2x16float` (f16_probe.wgsl, and the exact matvecs' scales on
    // devices that passed that probe) needs SHADER_FLOAT16_IN_FLOAT32,
    // which Vulkan, Metal and DX12 have.
    if src.contains("unpack2x16float(") {
        caps |= Capabilities::SHADER_FLOAT16_IN_FLOAT32;
    }
    let info = Validator::new(ValidationFlags::all(), caps)
        .validate(&module)
        .map_err(|e| e.emit_to_string(src))?;

    // Metal-relevant limits.
    let mut layouter = naga::proc::Layouter::default();
    layouter
        .update(module.to_ctx())
        .map_err(|e| format!("layout: {e}"))?;
    // Per entry point: the workgroup variables it uses (a file with several
    // entry points declares some that only others use).
    for (i, ep) in module.entry_points.iter().enumerate() {
        let uses = info.get_entry_point(i);
        let mut shared = 0u32;
        for (h, var) in module.global_variables.iter() {
            if var.space == naga::AddressSpace::WorkGroup && !uses[h].is_empty() {
                shared += layouter[var.ty].size;
            }
        }
        if shared > budget {
            return Err(format!("{}: {shared} bytes of workgroup memory", ep.name));
        }
    }
    for (_, ty) in module.types.iter() {
        if let naga::TypeInner::Atomic(s) = ty.inner
            && s.width == 8
        {
            return Err("64-bit atomic".into());
        }
    }
    if module.entry_points.is_empty() {
        return Err("no entry point".into());
    }

    for ep in &module.entry_points {
        // SPIR-V
        let spv_opts = naga::back::spv::Options::default();
        let spv_pipe = naga::back::spv::PipelineOptions {
            shader_stage: ep.stage,
            entry_point: ep.name.clone(),
        };
        naga::back::spv::write_vec(&module, &info, &spv_opts, Some(&spv_pipe))
            .map_err(|e| format!("SPIR-V ({}): {e:?}", ep.name))?;
        if coop {
            continue;
        }
        // MSL
        let msl_opts = naga::back::msl::Options {
            lang_version: (2, 1),
            ..Default::default()
        };
        let msl_pipe = naga::back::msl::PipelineOptions {
            entry_point: Some((ep.stage, ep.name.clone())),
            ..Default::default()
        };
        naga::back::msl::write_string(&module, &info, &msl_opts, &msl_pipe)
            .map_err(|e| format!("MSL ({}): {e:?}", ep.name))?;
        // HLSL
        let hlsl_opts = naga::back::hlsl::Options::default();
        let hlsl_pipe = naga::back::hlsl::PipelineOptions {
            entry_point: Some((ep.stage, ep.name.clone())),
        };
        let mut out = String::new();
        let mut w = naga::back::hlsl::Writer::new(&mut out, &hlsl_opts, &hlsl_pipe);
        w.write(&module, &info, None)
            .map_err(|e| format!("HLSL ({}): {e:?}", ep.name))?;
    }
    let _ = label;
    Ok(())
}

#[test]
fn every_shader_variant_validates_and_translates() {
    let variants = zeta_wgpu::shader_variants();
    assert!(variants.len() >= 30, "only {} variants", variants.len());
    let mut failures = Vec::new();
    for v in &variants {
        let src = v.source();
        assert!(
            !src.contains("deq_TYPE") && !src.contains("KV_IS_F16"),
            "{}: unsubstituted token",
            v.label()
        );
        // Without the probe's yes, only the probe itself names the builtin.
        assert!(
            v.label().starts_with("f16_probe:") || !src.contains("unpack2x16float("),
            "{}: unpack2x16float without the f16 probe",
            v.label()
        );
        let budget = v.workgroup_budget();
        if let Err(e) = check(
            &v.label(),
            &src,
            v.needs_subgroups(),
            v.needs_coop(),
            budget,
        ) {
            failures.push(format!("{}: {e}", v.label()));
        }
        // With exact.wgsl's native-fma branch (devices whose `fma` is fused).
        let fused = v.source_for(true, true);
        if fused != src
            && let Err(e) = check(
                &v.label(),
                &fused,
                v.needs_subgroups(),
                v.needs_coop(),
                budget,
            )
        {
            failures.push(format!("{} (fused fma, f16 unpack): {e}", v.label()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_shader_file_is_covered() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shaders");
    let variants = zeta_wgpu::shader_variants();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("wgsl") {
            continue;
        }
        let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
        let on_disk = std::fs::read_to_string(&path).unwrap();
        if stem == "quant" || stem == "f16" || stem == "q8" || stem == "exact" {
            // Libraries prepended to other shaders: covered through them
            // (f16.wgsl with its `FMA_FUSED_V` and `F16_UNPACK_V` substituted).
            let text = on_disk
                .replace("FMA_FUSED_V", "false")
                .replace("F16_UNPACK_V", "false");
            assert!(
                variants.iter().any(|v| v.source().contains(&text)),
                "shaders/{stem}.wgsl is prepended to no variant"
            );
            continue;
        }
        assert!(
            variants.iter().any(|v| {
                (v.file.name == stem && v.file.source == on_disk)
                    || v.suffix
                        .is_some_and(|f| f.name == stem && f.source == on_disk)
            }),
            "shaders/{stem}.wgsl is not used by any variant"
        );
    }
}

#[test]
fn a_broken_shader_is_rejected() {
    assert!(check("broken", "fn main( { }", false, false, WORKGROUP_BYTES).is_err());
    assert!(
        check(
            "big",
            "var<workgroup> a: array<f32, 8192>;\n@compute @workgroup_size(1) fn main() { a[0] = 1.0; }",
            false,
            false,
            WORKGROUP_BYTES
        )
        .is_err()
    );
    // Subgroup variants need the capability: without it they are rejected.
    let sg = zeta_wgpu::shader_variants()
        .into_iter()
        .find(|v| v.needs_subgroups())
        .unwrap();
    assert!(check("sg", &sg.source(), false, false, WORKGROUP_BYTES).is_err());
    // So do the cooperative-matrix ones.
    let coop = zeta_wgpu::shader_variants()
        .into_iter()
        .find(|v| v.needs_coop())
        .unwrap();
    assert!(check("coop", &coop.source(), false, false, WORKGROUP_BYTES).is_err());
}
