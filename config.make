# Sourced by nginx's configure after objs/Makefile is written: adds the rule
# that builds the Rust library with cargo. It always runs cargo (which knows
# what changed); the library is a link dependency of nginx (LINK_DEPS).

ngx_python_objs=`cd $NGX_OBJS && pwd`
ngx_python_src=`pwd`

cat << END >> $NGX_MAKEFILE

$ngx_python_lib: ngx_python_cargo
ngx_python_cargo: $NGX_OBJS/ngx_auto_config.h
	cd $ngx_python_dir && NGX_OBJS=$ngx_python_objs NGX_SRC=$ngx_python_src \\
	PYO3_PYTHON=$PYO3_PYTHON cargo build --release --lib \\
	--target-dir=$ngx_python_target --features="$NGX_PYTHON_FEATURES"

.PHONY: ngx_python_cargo
END
