use std::time::Instant;
fn main() {
    let setup = kiln_benches::kiln::setup(&kiln_benches::heap_wasm(16 << 20, false)).unwrap();
    for size in [1usize << 20, 4 << 20, 16 << 20] {
        let mut samples = Vec::new();
        for _ in 0..300 {
            let instance = setup.instantiate();
            instance.call("dirty", &[kiln_runtime::Val::I32(size as i32)]).unwrap();
            let start = Instant::now();
            drop(instance);
            samples.push(start.elapsed().as_nanos());
        }
        samples.sort();
        println!("teardown_dirty/{}M median {} us", size >> 20, samples[samples.len() / 2] / 1000);
    }
}
