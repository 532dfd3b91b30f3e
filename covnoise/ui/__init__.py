"""The only package that imports streamlit: cached resources, URL state, forms and the
widgets that pages share."""
